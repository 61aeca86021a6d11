"""The web console: sign-in, keys, projects and console tokens, served by buzz under /console/."""
