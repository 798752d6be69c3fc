fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = haste::Model::load(std::path::Path::new(&args[1])).unwrap();
    let bytes = std::fs::read(&args[2]).unwrap();
    let n = 20;
    let mean = [0.485f32, 0.456, 0.406];
    let std = [0.229f32, 0.224, 0.225];
    let mut input = vec![0f32; n * 3072];
    for i in 0..n {
        for c in 0..3 {
            for p in 0..1024 {
                input[i * 3072 + c * 1024 + p] = (bytes[i * 3073 + 1 + c * 1024 + p] as f32 / 255.0 - mean[c]) / std[c];
            }
        }
    }
    let mut plan = model.plan(haste::PlanOptions { threads: 2, max_batch: n }).unwrap();
    println!("macs {}", plan.dense_macs());
    let (shape, out) = plan.run(&input, n).unwrap();
    println!("{shape:?} {:?}", &out[..10]);
    let mut plan1 = model.plan(haste::PlanOptions { threads: 2, max_batch: 1 }).unwrap();
    let (_, out1) = plan1.run(&input[..3072], 1).unwrap();
    println!("{:?}", &out1[..10]);
}
