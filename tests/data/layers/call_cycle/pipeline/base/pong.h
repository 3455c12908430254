int pong(int n);
