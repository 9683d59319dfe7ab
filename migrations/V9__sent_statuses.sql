-- SPEC §13: two statuses below `failed`, so that the rank is
-- sent < unreported < failed < delivered < read and greatest() and > on
-- the type still implement the status rule. On their own in this
-- migration: a value added to an enum cannot be used in the transaction
-- that adds it (V10 uses them).
alter type message_status add value 'sent' before 'failed';
alter type message_status add value 'unreported' before 'failed';
