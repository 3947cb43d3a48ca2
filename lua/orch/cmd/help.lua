--- orch help: the help of orch, of a command, or of a recipe.
local args = require "orch.args"
local sys = require "orch.sys"

return {
  summary = "help for orch, a command or a recipe: orch help migrate, orch help recipes/prod.lua",
  usage = "usage: orch help [COMMAND | RECIPE.lua]",
  description = "Without an argument: the commands, the global options and the exit codes (as orch --help).\n" ..
    "With a command: its usage, options and examples (as orch COMMAND --help). With a recipe\n" ..
    "file: the options and steps it declares, read without running it. With --json the same as\n" ..
    "data: the commands, options (name, short, type, metavar, default, help) and examples.",
  operands = { max = 1, name = "COMMAND|RECIPE.lua", complete = "command" },
  examples = { "orch help migrate", "orch help recipes/prod.lua", "orch help help" },
  run = function(argv)
    local cli = require "orch.cli"
    local _, rest = args.parse(argv, cli.spec_of(require "orch.cmd.help"), "help")
    local what = rest[1]
    local function json_out(v) io.stdout:write(require("orch.json").encode(v, { indent = "  " }), "\n") return 0 end
    if not what then
      if cli.json then return json_out(cli.help_data()) end
      print(cli.help()) return 0
    end
    local c = cli.command(what)
    if c then
      if cli.json then return json_out(cli.command_data(what, c)) end
      print(cli.command_help(what, c)) return 0
    end
    local path = require("orch.project").from_cwd(what)
    if sys.exists(path) then
      if cli.json then return json_out(require("orch.recipe").describe(path, true)) end
      print(require("orch.recipe").describe(path))
      return 0
    end
    args.usage_error("help", string.format("no command or recipe named '%s' (orch --help lists the commands)", what))
  end,
}
