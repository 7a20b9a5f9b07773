//! The admin console (placeholder while it is built).
