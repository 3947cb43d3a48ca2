DROP TABLE password_resets;
DROP TABLE user_sessions;
DROP TABLE refresh_tokens;
DROP TABLE users;
