-- Nexmark q19 (auction TOP-10 price): the ten highest bids of each auction. A Top-N without
-- a window: each auction holds its ten best bids, and each micro-batch upserts the ranks of
-- the auctions it touched, keyed by (auction, rank_number).

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q19 STORED AS BLACKHOLE LOCATION 'nexmark-q19'
OPTIONS ('merge_key' 'auction, rank_number');

INSERT INTO q19
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
  FROM bid) AS t
WHERE rank_number <= 10;
