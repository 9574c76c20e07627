-- Nexmark q11 (user sessions): how many bids each bidder makes per session, a session ending
-- after 10 seconds without a bid. Written as any engine runs it: a gap flag from LAG, a
-- running SUM of it as the session id, then GROUP BY bidder and session id. The OVER windows
-- stream the flag and the id, each bid once final; a session's row is appended once the
-- watermark is more than the gap past its last bid, and its state dropped then.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q11 STORED AS BLACKHOLE LOCATION 'nexmark-q11';

INSERT INTO q11
SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime,
       max(date_time) + INTERVAL '10 seconds' AS endtime
FROM (SELECT bidder, date_time,
             SUM(new_session) OVER (PARTITION BY bidder ORDER BY date_time) AS session_id
      FROM (SELECT bidder, date_time,
                   CASE WHEN date_time - LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time)
                             <= INTERVAL '10 seconds' THEN 0 ELSE 1 END AS new_session
            FROM bid) AS flagged) AS sessions
GROUP BY bidder, session_id;
