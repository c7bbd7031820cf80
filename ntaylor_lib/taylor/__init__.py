"""The Taylor side of the paper: Jacobians at a scale, Taylor approximations and losses,
the hindsight Taylor optimum and its solvers, the recorders that collect what it needs
while a run trains, and regret (Section 2, Theorem 2, Figures 2 to 4)."""
