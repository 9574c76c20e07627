-- Nexmark q0 (pass-through): every bid, unchanged. Measures the cost of reading and writing.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q0 STORED AS BLACKHOLE LOCATION 'nexmark-q0';

INSERT INTO q0
SELECT auction, bidder, price, date_time, extra FROM bid;
