"""What more than one task uses: label losses and metrics, generation, text rows, scoring."""
