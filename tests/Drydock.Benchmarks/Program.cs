// Whole-process benchmark driver; the scenarios are added with the data-plane benchmark.
Console.Error.WriteLine("usage: Drydock.Benchmarks <scenario>");
return 2;
