int top_inner(void);
