-- Nexmark q1 (currency conversion): every bid's price from dollars to euros.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q1 STORED AS BLACKHOLE LOCATION 'nexmark-q1';

INSERT INTO q1
SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid;
