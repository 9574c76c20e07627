-- Nexmark q5 (hot items): the auctions with the most bids over the last 10 seconds, every
-- 2 seconds (event time, `date_time`). The sliding windows are hop windows; each window's
-- counts are joined, on the window, with that window's maximum (an aggregate grouped by the
-- hop's own window column), so ties all appear, as in the original.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q5 STORED AS BLACKHOLE LOCATION 'nexmark-q5';

INSERT INTO q5
SELECT auction_bids.auction, auction_bids.num, auction_bids.starttime
FROM (SELECT auction, starttime, count(*) AS num
      FROM (SELECT auction,
                   unnest(hop(date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')) AS starttime
            FROM bid) AS b
      GROUP BY auction, starttime) AS auction_bids
JOIN (SELECT starttime, max(num) AS maxn
      FROM (SELECT auction, starttime, count(*) AS num
            FROM (SELECT auction,
                         unnest(hop(date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')) AS starttime
                  FROM bid) AS b
            GROUP BY auction, starttime) AS count_bids
      GROUP BY starttime) AS max_bids
  ON auction_bids.starttime = max_bids.starttime AND auction_bids.num >= max_bids.maxn;
