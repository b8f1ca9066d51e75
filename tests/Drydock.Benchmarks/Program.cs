// Whole-process benchmark driver: one scenario per run.
return args.FirstOrDefault() switch
{
    "runtime" => await Drydock.Benchmarks.Runtime.RuntimeBenchmark.RunAsync(args[1..]),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: Drydock.Benchmarks <scenario>   scenarios: runtime");
    return 2;
}
