// Whole-process benchmark driver; the scenarios are added with the data-plane benchmark.
if (args.Length > 0 && args[0].StartsWith("repository", StringComparison.Ordinal))
{
    return await Drydock.Benchmarks.Repository.RepositoryBenchmark.RunAsync(args);
}

Console.Error.WriteLine("usage: Drydock.Benchmarks <scenario>");
return 2;
