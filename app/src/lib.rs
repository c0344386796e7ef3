//! Prism's application crate: the command line, the desktop app and its views. `main.rs` is a thin
//! entry point; the UI tests drive `gui::PrismApp` through this library.

pub mod cli;
pub mod gui;
pub mod views;
pub mod widgets;
