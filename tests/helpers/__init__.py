"""What the tests and benches share. Test modules import from here (or take conftest's
fixtures), never from one another."""
