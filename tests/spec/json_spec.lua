-- orch.json on lua-cjson, and SHA-256 on libcrypto: integers beyond 2^53
-- round-trip exactly, invalid UTF-8 is refused both ways, the output keeps
-- its sorted keys, empty objects and arrays; sys.sha256 gives the FIPS 180-4
-- digests through the EVP code.
local json = require "orch.json"
local sys = require "orch.sys"

describe("orch.json", function()
  it("round-trips integers above 2^53 exactly, as integers", function()
    local big = { math.maxinteger, math.mininteger, 9007199254740993, -9007199254740993, 2 ^ 53 + 0 | 0, 1234567890123456789 }
    local text = json.encode(big)
    assert.equals("[9223372036854775807,-9223372036854775808,9007199254740993,-9007199254740993,9007199254740992,1234567890123456789]", text)
    local back = json.decode(text)
    for i, v in ipairs(big) do
      assert.equals("integer", math.type(back[i]))
      assert.equals(v, back[i])
    end
    -- inside objects, and pretty-printed
    local m = json.decode(json.encode({ size = math.maxinteger, nested = { lsn = 9007199254740993 } }, { indent = "  " }))
    assert.equals(math.maxinteger, m.size)
    assert.equals(9007199254740993, m.nested.lsn)
    -- small integral numbers come back as integers too, floats as floats
    local s = json.decode("[1, -0, 3.0, 1.5, 1e300, 0.1]")
    assert.equals("integer", math.type(s[1]))
    assert.equals("integer", math.type(s[3]))
    assert.equals("float", math.type(s[4]))
    assert.equals(1e300, s[5])
    assert.equals(0.1, s[6])
  end)

  it("prints floats with the digits that read back the same", function()
    for _, v in ipairs { 0.1, 1 / 3, 0.1 + 0.2, 123456.789, 1e-300, -2.5 } do
      assert.equals(v, json.decode(json.encode({ v }))[1])
    end
    assert.equals("[null]", json.encode({ 0 / 0 }))
  end)

  it("refuses invalid UTF-8 on encode and decode", function()
    local ok, err = pcall(json.encode, { note = "caf\xe9" })
    assert.is_false(ok)
    assert.matches("the value of key note is not valid UTF%-8", err)
    ok, err = pcall(json.encode, { ["k\xff"] = 1 })
    assert.is_false(ok)
    assert.matches("an object key is not valid UTF%-8", err)
    ok, err = pcall(json.decode, '{"a": "caf\xe9"}')
    assert.is_false(ok)
    assert.matches("invalid JSON at line 1 %(byte 11%): invalid UTF%-8", err)
    -- an overlong encoding, and a lone surrogate written as an escape
    assert.is_false((pcall(json.decode, '["\xc0\xaf"]')))
    assert.is_false((pcall(json.decode, '["\\ud800"]')))
    assert.is_false((pcall(json.decode, '["\\udc00", 12345678901234567890]')))
    -- valid multi-byte text passes both ways
    assert.equals("é😀", json.decode(json.encode({ "é😀" }))[1])
    assert.equals("é😀", json.decode('["\\u00e9\\ud83d\\ude00"]')[1])
  end)

  it("with bytes = true (a manifest's SQL_ASCII and LATIN1 names) lets strings that are not UTF-8 through byte for byte, and only then", function()
    local v = { tables = { ["public.caf\xe9"] = 1 }, note = "r\xe9sum\xe9 \xff", big = math.maxinteger }
    local text = json.encode(v, { indent = "  ", bytes = true })
    assert.truthy(text:find("public.caf\xe9", 1, true))
    local back = json.decode(text, { bytes = true })
    assert.equals(1, back.tables["public.caf\xe9"])
    assert.equals("r\xe9sum\xe9 \xff", back.note)
    assert.equals(v.big, back.big)
    -- the strict calls still refuse the same texts and keys (no cached key lets one through)
    assert.is_false((pcall(json.decode, text)))
    assert.is_false((pcall(json.encode, { tables = { ["public.caf\xe9"] = 1 } })))
  end)

  it("keeps sorted keys, {} and [], null, and escapes", function()
    assert.equals('{"a":[],"b":{},"c":null,"d":"x/y\\"\\n\\t\\u0001","e":true}',
      json.encode({ e = true, d = "x/y\"\n\t\1", c = json.null, b = json.object(), a = {} }))
    local d = json.decode('{"b": {}, "a": [], "c": null, "n": {"x": {}}}')
    assert.equals('{"a":[],"b":{},"c":null,"n":{"x":{}}}', json.encode(d))
    assert.equals(json.null, d.c)
    assert.equals('[\n  1,\n  {\n    "k": "v"\n  }\n]', json.encode({ 1, { k = "v" } }, { indent = "  " }))
  end)

  it("names what is wrong in a bad text", function()
    for text, want in pairs {
      ["[1,]"] = "byte 4%): Expected value but found '%]'",
      ['{"a":1} x'] = "byte 9%)",
      ["[0x10]"] = "invalid number",
      [""] = "byte 1",
      ['{"a" 1}'] = "",
    } do
      local ok, err = pcall(json.decode, text)
      assert.is_false(ok, text)
      assert.matches("^invalid JSON at line %d+ %(byte %d+%)", err)
      assert.matches(want, err)
    end
  end)
end)

describe("sys.sha256 (libcrypto EVP)", function()
  it("gives the FIPS 180-4 example digests, for strings and files", function()
    assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", sys.sha256("abc"))
    assert.equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sys.sha256(""))
    assert.equals("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      sys.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    local dir = sys.mkdtemp("/tmp/orch-sha-")
    local f = assert(io.open(dir .. "/a", "wb"))
    -- one million 'a', across the 64 KiB reads of sha256_file
    f:write(string.rep("a", 1000000))
    f:close()
    local sum, size = sys.sha256_file(dir .. "/a")
    sys.rmtree(dir)
    assert.equals("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", sum)
    assert.equals(1000000, size)
  end)
end)
