using System.Globalization;
using System.Text.RegularExpressions;

namespace Drydock.Repository.Maintenance;

/// <summary>
/// Who holds a lease, down to the process: a lease holder is written as <c>HOLDER [host=H boot=B pidns=N pid=P start=S]</c>
/// (Linux boot id, pid namespace inode, pid and the process's start time in clock ticks since boot, from
/// <c>/proc/PID/stat</c>). A process on the same host, boot and pid namespace can then tell that the holder is gone
/// (no such pid, or the pid now belongs to a process started at another time) and take its lease over at once instead
/// of waiting for the lease to expire. Anything not comparable (another host, boot or namespace; no <c>/proc</c>; a
/// holder written without the suffix by an older version) is judged alive: only the expiry frees it.
/// </summary>
internal static partial class LeaseHolderProcess
{
    private static readonly Lazy<Identity?> Current = new(ReadCurrent);

    /// <summary>The holder as written to a lease: <paramref name="holder"/> with this process's identity appended when known.</summary>
    public static string Describe(string holder) => Current.Value is { } me ? $"{holder} {Format(me)}" : holder;

    /// <summary>Whether the lease's holder was a process of this host, boot and pid namespace that no longer runs.</summary>
    public static bool IsGoneLocally(string holder)
    {
        if (Current.Value is not { } me || Parse(holder) is not { } them)
        {
            return false;
        }

        if (them.Host != me.Host || them.Boot != me.Boot || them.PidNamespace != me.PidNamespace)
        {
            return false;
        }

        if (them.Pid == me.Pid && them.Start == me.Start)
        {
            return false;
        }

        return StartTimeOf(them.Pid) != them.Start;
    }

    private static string Format(Identity identity) => string.Create(
        CultureInfo.InvariantCulture,
        $"[host={identity.Host} boot={identity.Boot} pidns={identity.PidNamespace} pid={identity.Pid} start={identity.Start}]");

    private static Identity? Parse(string holder)
    {
        var match = SuffixPattern().Match(holder);
        if (!match.Success
            || !int.TryParse(match.Groups["pid"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
            || !long.TryParse(match.Groups["start"].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var start))
        {
            return null;
        }

        return new Identity(match.Groups["host"].Value, match.Groups["boot"].Value, match.Groups["pidns"].Value, pid, start);
    }

    private static Identity? ReadCurrent()
    {
        try
        {
            if (!OperatingSystem.IsLinux())
            {
                return null;
            }

            var pid = Environment.ProcessId;
            var boot = File.ReadAllText("/proc/sys/kernel/random/boot_id").Trim();
            var pidNamespace = new FileInfo("/proc/self/ns/pid").LinkTarget ?? "";
            var namespaceInode = NamespacePattern().Match(pidNamespace) is { Success: true } m ? m.Groups[1].Value : null;
            var host = Environment.MachineName;
            return StartTimeOf(pid) is { } start && namespaceInode is not null && !host.Contains(' ', StringComparison.Ordinal)
                ? new Identity(host, boot, namespaceInode, pid, start)
                : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Field 22 of <c>/proc/PID/stat</c> (start time in clock ticks after boot), or null when there is no such process.</summary>
    private static long? StartTimeOf(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText(string.Create(CultureInfo.InvariantCulture, $"/proc/{pid}/stat"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        // The command name (field 2) is in parentheses and may contain spaces: count fields after its closing one.
        var fields = stat[(stat.LastIndexOf(')') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        const int StartTimeAfterName = 22 - 3;
        return fields.Length > StartTimeAfterName && long.TryParse(fields[StartTimeAfterName], NumberStyles.None, CultureInfo.InvariantCulture, out var start)
            ? start
            : null;
    }

    [GeneratedRegex(@"\[host=(?<host>\S+) boot=(?<boot>[0-9a-f-]+) pidns=(?<pidns>\d+) pid=(?<pid>\d+) start=(?<start>\d+)\]$", RegexOptions.CultureInvariant)]
    private static partial Regex SuffixPattern();

    [GeneratedRegex(@"^pid:\[(\d+)\]$", RegexOptions.CultureInvariant)]
    private static partial Regex NamespacePattern();

    private sealed record Identity(string Host, string Boot, string PidNamespace, int Pid, long Start);
}
