//! The jobs framework's pure half (Chronos and Metronome): when a job runs (`schedule`:
//! ISO 8601 repeating intervals and cron, in a time zone), which dependent jobs may run and
//! which parents are refused (`dag`), and the run policy's decisions (`policy`:
//! concurrency, late starts, retries), a schedule in plain words (`describe`), and what is
//! replicated (`state`: jobs, runs, history,
//! the cursor that makes a scheduled run exactly-once).

pub mod dag;
pub mod describe;
pub mod planner;
pub mod policy;
pub mod schedule;
pub mod state;
