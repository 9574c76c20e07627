-- Nexmark q7 (highest bid): the bids of each 10-second window whose price is the window's
-- highest. The original joins each bid with the window maximum by time range; here both
-- sides are in the same tumbling window (the bid's own bucket), a windowed join.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q7 STORED AS BLACKHOLE LOCATION 'nexmark-q7';

INSERT INTO q7
SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
FROM bid b
JOIN (SELECT date_bin(INTERVAL '10 seconds', date_time) AS w, max(price) AS maxprice
      FROM bid GROUP BY 1) AS m
  ON date_bin(INTERVAL '10 seconds', b.date_time) = m.w AND b.price = m.maxprice;
