-- Rolling features per rider: three aggregates over each rider's last 10 minutes, for every
-- ride request. 1M requests of 100K riders over about a day of event time.
--
--   volley run   benches/over/pipeline.sql --quiet --no-flight --no-checkpoint   (streaming)
--   volley batch benches/over/pipeline.sql                                       (DataFusion's window operator)

CREATE EXTERNAL TABLE ride_requests STORED AS GENERATOR LOCATION 'rides'
OPTIONS ('count' '1000000', 'rate' '12', 'seed' '42', 'riders' '100000',
         'disorder' '2 seconds', 'watermark' 'event_time - INTERVAL ''5 seconds''',
         'max_rows' '65536');

CREATE EXTERNAL TABLE rider_features STORED AS BLACKHOLE LOCATION 'x';

INSERT INTO rider_features
SELECT request_id, rider_id, event_time,
       count(*) OVER w AS requests_10m,
       sum(lat) OVER w AS lat_sum_10m,
       avg(lon) OVER w AS lon_avg_10m
FROM ride_requests
WINDOW w AS (PARTITION BY rider_id ORDER BY event_time
             RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW);
