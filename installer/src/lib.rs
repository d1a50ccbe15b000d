//! Installer: inventory, preflight checks, install plan and SSH executor. Empty until the installer issue lands.
