DROP TABLE escalations;
DROP TABLE notifications;
