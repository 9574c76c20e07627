-- Nexmark q3 (local item suggestion): who sells in category 10 from Oregon, Idaho or
-- California, with the auctions they opened. The original joins every auction with its seller
-- however far apart they are in time, which would hold every person and auction forever.
-- Here the join is bounded by the sink's `state_ttl`: an auction joins a person created at
-- most 1 hour before or after it in event time. The generator picks an auction's seller among
-- the last 1,000 people (a hot seller among the last 100), seconds before the auction at this
-- rate, so the bounded join gives the unbounded join's rows, and `volley verify` checks it.
-- The `nexmark` crate's generator writes the states in lower case.

CREATE EXTERNAL TABLE auction STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'auction', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE person STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'person', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q3 STORED AS BLACKHOLE LOCATION 'nexmark-q3'
OPTIONS ('state_ttl' '1 hour');

INSERT INTO q3
SELECT p.name, p.city, p.state, a.id
FROM auction a JOIN person p ON a.seller = p.id
WHERE a.category = 10 AND p.state IN ('or', 'id', 'ca');
