-- Fraud scoring: every ride request is scored by a small ONNX model (fraud.onnx, built by
-- build_model.py) on rolling features of its rider, and so is each rider's activity per
-- one-minute window. Both go to Delta tables whose commits record the model's SHA-256
-- (commitInfo "volley.models").
--
-- The model takes [amount, hour, distance_km, requests_last_hour]. The rider's requests in
-- the last 10 minutes and the last hour, and the time since the rider's previous request, are
-- OVER windows: the same SQL run with `volley batch` over history gives the training table,
-- with the same values. The ride generator has no fares, so amount and distance are derived
-- from its columns.

CREATE MODEL fraud STORED AS ONNX LOCATION 'examples/fraud/fraud.onnx'
OPTIONS ('backend' 'tract', 'max_rows' '8192');

CREATE EXTERNAL TABLE ride_requests (
  request_id BIGINT NOT NULL,
  rider_id   BIGINT NOT NULL,
  lat        DOUBLE NOT NULL,
  lon        DOUBLE NOT NULL,
  event_time TIMESTAMP NOT NULL
) STORED AS GENERATOR LOCATION 'rides'
OPTIONS (
  'count' '200000',
  'rate' '2000',
  'seed' '7',
  'riders' '5000',
  'disorder' '2 seconds',
  'watermark' 'event_time - INTERVAL ''5 seconds''',
  'max_rows' '8192'
);

CREATE EXTERNAL TABLE scored_requests STORED AS DELTA LOCATION 'out/fraud/scored_requests';

CREATE EXTERNAL TABLE rider_risk_1m STORED AS DELTA LOCATION 'out/fraud/rider_risk_1m'
OPTIONS ('merge_key' 'rider_id, window_start');

-- Per event: each request with its rider's rolling features, scored as it arrives.
INSERT INTO scored_requests
SELECT request_id,
       rider_id,
       event_time,
       requests_10m,
       requests_1h,
       seconds_since_previous,
       predict('fraud',
               (request_id % 200) * 0.5,
               extract(hour FROM event_time),
               abs(lat - round(lat)) * 111.0,
               requests_1h) AS score
FROM (
  SELECT request_id,
         rider_id,
         lat,
         event_time,
         count(*) OVER (PARTITION BY rider_id ORDER BY event_time
                        RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS requests_10m,
         count(*) OVER (PARTITION BY rider_id ORDER BY event_time
                        RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS requests_1h,
         arrow_cast(event_time - LAG(event_time) OVER (PARTITION BY rider_id ORDER BY event_time),
                    'Int64') / 1e9 AS seconds_since_previous
  FROM ride_requests
) AS features;

-- Per rider and window: the model over the window's aggregates.
INSERT INTO rider_risk_1m
SELECT rider_id,
       window_start,
       requests,
       predict('fraud', spread_km, hour, spread_km, requests / 10.0) AS score
FROM (
  SELECT rider_id,
         date_bin(INTERVAL '1 minute', event_time) AS window_start,
         count(*) AS requests,
         (max(lat) - min(lat)) * 111.0 AS spread_km,
         max(extract(hour FROM event_time)) AS hour
  FROM ride_requests
  GROUP BY 1, 2
);
