-- Nexmark q2 (selection): the bids on a set of auctions, as `auction % 123 = 0` (the form
-- RisingWave and Arroyo use, since the original's fixed ids depend on the generator's scale).

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q2 STORED AS BLACKHOLE LOCATION 'nexmark-q2';

INSERT INTO q2
SELECT auction, price FROM bid WHERE auction % 123 = 0;
