//! The integration tests: each runs the real binaries as a student would in a lab session.
//! `harness` is the bench; one module per mechanism.

mod classroom;
mod cpeers;
mod fifo;
mod hardening;
mod harness;
mod ipcbench;
mod labs;
mod make;
mod manual;
mod mman;
mod msgq;
mod pipes;
mod shm;
