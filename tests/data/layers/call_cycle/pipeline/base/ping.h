int ping(int n);
