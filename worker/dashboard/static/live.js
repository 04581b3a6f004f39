// live updates: filled in below
