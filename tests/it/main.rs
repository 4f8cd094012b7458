//! The integration tests: each runs the real binaries as a student would in a lab session.
//! `harness` is the bench; one module per mechanism.

mod fifo;
mod harness;
mod labs;
mod make;
mod msgq;
mod pipes;
