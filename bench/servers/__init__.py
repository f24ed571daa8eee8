"""The peers livegate is measured against, each written for the same job (bench/README.md)."""
