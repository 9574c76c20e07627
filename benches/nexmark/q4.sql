-- Nexmark q4 (average price per category): the winning bid of each auction (its highest bid
-- while it was open), averaged per category. The original averages over every auction ever,
-- updated as bids come in. Here it is in event time: auctions are grouped by the 10-second
-- window they opened in, so each window's averages are final once its auctions have closed.
--
-- A bid counts while its auction is open (`b.date_time BETWEEN a.date_time AND a.expires`),
-- a join bounded by each auction's own lifetime, not by a fixed interval. The sink's
-- `state_ttl` bounds it: an auction joins the bids at most 1 minute after it opened. The
-- generator's auctions run well under that at this rate, so the bounded join gives the
-- unbounded join's rows, and `volley verify` checks it.

CREATE EXTERNAL TABLE auction STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'auction', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q4 STORED AS BLACKHOLE LOCATION 'nexmark-q4'
OPTIONS ('state_ttl' '1 minute');

INSERT INTO q4
SELECT category, opened, avg(final) AS avg_final, count(*) AS auctions
FROM (SELECT a.id, a.category, date_bin(INTERVAL '10 seconds', a.date_time) AS opened,
             max(b.price) AS final
      FROM auction a JOIN bid b
        ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
      GROUP BY a.id, a.category, 3) AS winning
GROUP BY category, opened;
