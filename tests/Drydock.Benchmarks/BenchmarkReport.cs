namespace Drydock.Benchmarks;

/// <summary>Keeps docs/BENCHMARKS.md up to date: each scenario owns the text between its two markers.</summary>
internal static class BenchmarkReport
{
    public static void Replace(string path, string scenario, string section)
    {
        var start = $"<!-- {scenario}:start -->";
        var end = $"<!-- {scenario}:end -->";
        var text = File.Exists(path) ? File.ReadAllText(path) : "# Benchmarks\n";
        var block = $"{start}\n{section.TrimEnd()}\n{end}";
        var from = text.IndexOf(start, StringComparison.Ordinal);
        var to = text.IndexOf(end, StringComparison.Ordinal);
        text = from >= 0 && to > from
            ? text[..from] + block + text[(to + end.Length)..]
            : text.TrimEnd() + $"\n\n## {scenario}\n\n{block}\n";
        File.WriteAllText(path, text);
    }
}
