-- Requests an application created with its API key (DESIGN.md, "Apps that embed Longrun"):
-- which app, and the app's own name for the person (user_ref). NULL for requests made from
-- Longrun's own pages. The row's user_id is already per (app, user_ref), so one person's
-- history in an app is the existing (user_id, finished_at, hash) index; no index is added.
ALTER TABLE history ADD COLUMN app text, ADD COLUMN user_ref text;
