using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Drydock.SiloHost.Cli;

/// <summary>
/// A one-line progress display on a terminal (bytes done, rate, ETA), redrawn a few times a second.
/// When disabled (output is not a terminal), it prints nothing.
/// </summary>
internal sealed class TerminalProgress : IAsyncDisposable
{
    [SuppressMessage("Reliability", "CA2213:Disposable fields should be disposed", Justification = "The writer belongs to the caller.")]
    private readonly TextWriter _writer;
    private readonly Func<ulong> _done;
    private readonly Func<ulong> _total;
    private readonly string _label;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stop = new();
    private readonly long _started;
    private readonly Task _loop;

    public TerminalProgress(TextWriter writer, string label, ulong total, Func<ulong> done, bool enabled, TimeProvider? time = null)
        : this(writer, label, () => total, done, enabled, time)
    {
    }

    /// <summary>A display whose total is learnt as the work is planned (e.g. per disk).</summary>
    public TerminalProgress(TextWriter writer, string label, Func<ulong> total, Func<ulong> done, bool enabled, TimeProvider? time = null)
    {
        _writer = writer;
        _label = label;
        _total = total;
        _done = done;
        _time = time ?? TimeProvider.System;
        _started = _time.GetTimestamp();
        _loop = enabled ? RunAsync() : Task.CompletedTask;
        Enabled = enabled;
    }

    public bool Enabled { get; }

    /// <summary>Whether progress should be shown by default on this process's standard error.</summary>
    public static bool IsTerminal(TextWriter writer) => ReferenceEquals(writer, Console.Error) && !Console.IsErrorRedirected;

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        if (Enabled)
        {
            await _writer.WriteAsync("\r" + Line() + Environment.NewLine);
        }

        _stop.Dispose();
    }

    private async Task RunAsync()
    {
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250), _time, _stop.Token);
                await _writer.WriteAsync("\r" + Line());
                await _writer.FlushAsync(_stop.Token);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private string Line()
    {
        var total = _total();
        var done = Math.Min(_done(), total);
        var seconds = Math.Max(_time.GetElapsedTime(_started).TotalSeconds, 1e-3);
        var rate = done / seconds;
        var percent = total == 0 ? 100.0 : 100.0 * done / total;
        var eta = rate > 0 ? TimeSpan.FromSeconds((total - done) / rate) : TimeSpan.Zero;
        return string.Create(
            CultureInfo.InvariantCulture,
            $"{_label} {percent,6:0.0}%  {Sizes.Human(done)} / {Sizes.Human(total)}  {Sizes.Human((ulong)rate)}/s  ETA {eta:hh\\:mm\\:ss}   ");
    }
}

/// <summary>Byte counts for people.</summary>
internal static class Sizes
{
    /// <summary>For example <c>1.5 GiB</c>.</summary>
    public static string Human(ulong bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        var unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.0} {units[unit]}");
    }
}
