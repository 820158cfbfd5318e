"""The command-line entry points (cg2a-train, cg2a-eval, cg2a-plot, cg2a-sweep, cg2a-report); argv lives only here."""
