"""Program search (DESIGN.md section 5): MCTS over programs with batched, memoised evaluation."""

__all__: list[str] = []
