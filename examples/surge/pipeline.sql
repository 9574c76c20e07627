-- Surge demand: ride requests per geohash6 cell per 1-minute window, plus a coarser
-- geohash4 roll-up, from a deterministic ride-request generator (no broker needed).
-- 'pace' 'realtime' releases the requests at their event-time rate (5,000/s for 200 s), so the
-- run stays up to be watched and queried; remove it to run through them at full speed.

CREATE EXTERNAL TABLE ride_requests (
  request_id BIGINT NOT NULL,
  rider_id   BIGINT NOT NULL,
  lat        DOUBLE NOT NULL,
  lon        DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS GENERATOR LOCATION 'rides'
OPTIONS (
  'count' '1000000',
  'rate' '5000',
  'pace' 'realtime',
  'seed' '42',
  'disorder' '3 seconds',
  'watermark' 'event_time - INTERVAL ''5 seconds''',
  'max_rows' '65536'
);

CREATE EXTERNAL TABLE demand_1m STORED AS PARQUET LOCATION 'out/demand_1m'
OPTIONS ('merge_key' 'geohash6, window_start');

CREATE EXTERNAL TABLE demand_region_1m STORED AS JSON LOCATION 'out/demand_region_1m'
OPTIONS ('merge_key' 'geohash4, window_start');

INSERT INTO demand_1m
SELECT geohash(lat, lon, 6) AS geohash6,
       date_bin(INTERVAL '1 minute', event_time) AS window_start,
       count(*) AS requests,
       count(DISTINCT rider_id) AS riders
FROM ride_requests
GROUP BY 1, 2;

INSERT INTO demand_region_1m
SELECT geohash_parent(geohash(lat, lon, 6), 4) AS geohash4,
       tumble(event_time, INTERVAL '1 minute') AS window_start,
       count(*) AS requests,
       avg(lat) AS mean_lat
FROM ride_requests
GROUP BY 1, 2
HAVING count(*) >= 10;
