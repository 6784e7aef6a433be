"""The watchdog: rules evaluated after each sampling round, healing soft decay without a human."""
