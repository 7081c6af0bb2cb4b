-- Claims read each kind's due jobs from `jobs_due_by_kind` (issue 14).
-- With an index ordered by due time alone beside it, the planner, led by
-- statistics that a queue outdates within seconds, walked that one and
-- passed over every due job of the other lanes first: tens of thousands
-- of deliveries in front of the due steps, 8 ms a claim.
DROP INDEX jobs_due;
-- A claim changes only unindexed columns (lease, worker, attempts): with
-- room left on each page the new row version stays on it (a HOT update)
-- and adds no index entries, which the next claims would walk past dead.
ALTER TABLE jobs SET (fillfactor = 70);
