from t2v_rt.cli import entry

entry()
