from t2v_rt.launch import entry

entry()
