# Cross-check fast.generate_shared against polar.generate (60 prompts x 3 programs): python check_fast.py
import sys, time, json
sys.argv=['x']
import measure, fast, torch, polar, levels
torch.set_num_threads(1)
m,t=polar.load_default()
ps=measure.level_problems("add_1d_10_29",100,seed=0)[:40] + measure.word_family(20,None,0)
full=[polar.build_prompt(p,"fewshot") for p in ps]
prefix=full[0].rsplit("Q: ",1)[0]
assert all(f.startswith(prefix) for f in full)
sufs=[f[len(prefix):] for f in full]
for prog in [list(range(30)), measure.apply_edit(("repeat",15,3)), measure.apply_edit(("skip",10,2))]:
    t0=time.time(); a=fast.generate_shared(m,t,full,prog); ta=time.time()-t0
    t0=time.time(); b=polar.generate(m,t,full,[prog]*len(full),max_new_tokens=8,stop_strings=["\n"]).texts; tb=time.time()-t0
    print(len(prog), "same", sum(x==y for x,y in zip(a,b)), "/", len(a), f"fast {ta:.1f}s polar {tb:.1f}s")
    print([ (x,y) for x,y in zip(a,b) if x!=y][:5])
