"""Built-in reporters: terminal lines, JSON and JUnit XML, each a plugin."""
