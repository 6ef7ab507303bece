-- The floor under the learned rules (issue #17), owned by the `detectors` package: per meter
-- and learned day, the least litres any of the plain field rule's windows (low_usage_min_l in
-- low_usage_window_h of known data) starting that day held. A resident none of whose recent
-- days went under the field rule's minimum is flagged the moment the field rule would flag
-- them. NULL: no window of that day was known (a gap, an absence), or a row saved before this
-- column existed; such days say nothing either way.
ALTER TABLE detector_day ADD COLUMN floor_min_l real;
