int keep_value(void);
