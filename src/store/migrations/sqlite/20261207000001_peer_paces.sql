-- The pace of a peer's unannounced rate limit, shared by the workers of a round (docs/OPERATIONS.md,
-- "Workers that share a night"):
-- one worker's 429 reveals how far apart requests must start, and every worker of the round then
-- takes the start of each request to that peer from this row, so that together they keep to it.
-- Times are the database's clock in epoch milliseconds, so that workers on machines whose clocks
-- differ still agree on one schedule.
CREATE TABLE peer_paces (
    round         TEXT NOT NULL,
    -- host:port of the peer, as the HTTP client counts its requests.
    peer          TEXT NOT NULL,
    -- The least time between two request starts.
    pace_ms       INTEGER NOT NULL,
    -- The earliest start of the next request.
    next_start_ms INTEGER NOT NULL,
    PRIMARY KEY (round, peer)
);
