-- Nexmark q9 (winning bids): each auction with its winning bid, the highest bid while it was
-- open (the earliest of equal bids). Bids join their auction while it is open
-- (`b.date_time BETWEEN a.date_time AND a.expires`), a join bounded by each auction's own
-- lifetime and by the sink's `state_ttl`: an auction joins bids at most 1 minute after it
-- opened, which covers the generator's auctions at this rate (`volley verify` checks it).
--
-- The ranking is partitioned by the auction's id and its event time, so each auction's row
-- is final, and appended once, when the join's watermark passes the auction's time; it holds
-- one bid per open auction. (Nexmark partitions by the id alone, which is unique per auction
-- here; written that way, the ranks are upserted by the id and every auction stays held.)

CREATE EXTERNAL TABLE auction STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'auction', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q9 STORED AS BLACKHOLE LOCATION 'nexmark-q9'
OPTIONS ('state_ttl' '1 minute');

INSERT INTO q9
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
       extra, auction, bidder, price, bid_date_time, bid_extra
FROM (SELECT a.*, b.auction, b.bidder, b.price, b.date_time AS bid_date_time,
             b.extra AS bid_extra,
             ROW_NUMBER() OVER (PARTITION BY a.id, a.date_time
                                ORDER BY b.price DESC, b.date_time) AS rownum
      FROM auction a JOIN bid b
        ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires) AS winning
WHERE rownum <= 1;
