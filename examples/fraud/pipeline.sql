-- Fraud scoring: every ride request is scored by a small ONNX model (fraud.onnx, built by
-- build_model.py), and so is each rider's activity per one-minute window. Both go to Delta
-- tables whose commits record the model's SHA-256 (commitInfo "volley.models").
--
-- The model takes [amount, hour, distance_km, requests_last_hour]; the ride generator has no
-- fares, so the features are derived from its columns.

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

-- Per event: a score for every request as it arrives.
INSERT INTO scored_requests
SELECT request_id,
       rider_id,
       event_time,
       predict('fraud',
               (request_id % 200) * 0.5,
               extract(hour FROM event_time),
               abs(lat - round(lat)) * 111.0,
               rider_id % 12) AS score
FROM ride_requests;

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
