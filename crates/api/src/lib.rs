//! Wire types shared by the master, the agent and the CLI.
