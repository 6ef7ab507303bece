-- The detectors ask on every sweep whether a check-in was settled since they last read who
-- can be asked (detectors/store.py `check_ins_settled`), and read the newest "fine" answers
-- by `answered_at`: an index keeps both off a scan of every check-in ever made.
CREATE INDEX check_in_answer_answered_idx ON check_in_answer (answered_at);
