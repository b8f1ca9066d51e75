using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Drydock.TestKit;

/// <summary>How <see cref="ProcessRunner"/> runs one command.</summary>
public sealed record ProcessRunOptions
{
    /// <summary>The default options: two minutes, non-zero exit throws.</summary>
    public static ProcessRunOptions Default { get; } = new();

    /// <summary>Hang protection: the process (tree) is killed after this long. Default 2 minutes.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Throw <see cref="ProcessFailedException"/> on a non-zero exit code. Default true.</summary>
    public bool ThrowOnNonZeroExit { get; init; } = true;

    /// <summary>Working directory; default: the current one.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>Variables added to (or, with a null value, removed from) the inherited environment.</summary>
    public IReadOnlyDictionary<string, string?>? Environment { get; init; }

    /// <summary>Bytes written to standard input, which is then closed; default: an empty standard input.</summary>
    public ReadOnlyMemory<byte> StandardInput { get; init; }
}

/// <summary>What a finished command did.</summary>
/// <param name="CommandLine">The command line, shell-quoted, for messages.</param>
/// <param name="ExitCode">The exit code.</param>
/// <param name="StandardOutput">Everything written to standard output.</param>
/// <param name="StandardError">Everything written to standard error.</param>
/// <param name="Elapsed">Wall time.</param>
public sealed record ProcessResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError, TimeSpan Elapsed)
{
    /// <summary>True when the exit code is 0.</summary>
    public bool Succeeded => ExitCode == 0;

    /// <summary>Throws <see cref="ProcessFailedException"/> unless the exit code is 0.</summary>
    /// <returns>This result.</returns>
    public ProcessResult EnsureSuccess() => Succeeded ? this : throw new ProcessFailedException(this);
}

/// <summary>A command exited with a non-zero code; the message names the command line and its standard error.</summary>
public sealed class ProcessFailedException : Exception
{
    /// <summary>Creates the exception for <paramref name="result"/>.</summary>
    public ProcessFailedException(ProcessResult result)
        : base(string.Create(CultureInfo.InvariantCulture,
            $"Command failed with exit code {result.ExitCode}: {result.CommandLine}\nstderr: {ProcessRunner.Tail(result.StandardError)}\nstdout: {ProcessRunner.Tail(result.StandardOutput)}"))
    {
        Result = result;
    }

    /// <summary>The failed command's result.</summary>
    public ProcessResult Result { get; }
}

/// <summary>Runs an external program to completion with captured output and a timeout.</summary>
public static class ProcessRunner
{
    /// <summary>Runs <paramref name="tool"/> with <paramref name="arguments"/> (no shell involved).</summary>
    /// <param name="tool">Program name (looked up on PATH with <see cref="Tool.Find"/>) or absolute path.</param>
    /// <param name="arguments">Arguments, each passed as is.</param>
    /// <param name="cancellationToken">Cancels the run, killing the process tree.</param>
    /// <returns>The result.</returns>
    /// <exception cref="ProcessFailedException">Non-zero exit.</exception>
    /// <exception cref="TimeoutException">The command ran longer than the default timeout (2 minutes).</exception>
    public static Task<ProcessResult> RunAsync(string tool, IReadOnlyList<string> arguments, CancellationToken cancellationToken = default) =>
        RunAsync(tool, arguments, ProcessRunOptions.Default, cancellationToken);

    /// <summary>Runs <paramref name="tool"/> with <paramref name="arguments"/> (no shell involved).</summary>
    /// <param name="tool">Program name (looked up on PATH with <see cref="Tool.Find"/>) or absolute path.</param>
    /// <param name="arguments">Arguments, each passed as is.</param>
    /// <param name="options">Timeout, exit-code policy, environment, standard input.</param>
    /// <param name="cancellationToken">Cancels the run, killing the process tree.</param>
    /// <returns>The result.</returns>
    /// <exception cref="ProcessFailedException">Non-zero exit while <see cref="ProcessRunOptions.ThrowOnNonZeroExit"/>.</exception>
    /// <exception cref="TimeoutException">The command ran longer than <see cref="ProcessRunOptions.Timeout"/>.</exception>
    public static async Task<ProcessResult> RunAsync(string tool, IReadOnlyList<string> arguments, ProcessRunOptions options, CancellationToken cancellationToken = default)
    {
        var path = Tool.Find(tool);
        var commandLine = FormatCommandLine(tool, arguments);
        var startInfo = CreateStartInfo(path, arguments, options.WorkingDirectory, options.Environment);
        TestKitLog.Write("run: " + commandLine);

        var stopwatch = Stopwatch.StartNew();
        using var process = new Process { StartInfo = startInfo };
        process.Start();

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.Timeout);
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            if (!options.StandardInput.IsEmpty)
            {
                await process.StandardInput.BaseStream.WriteAsync(options.StandardInput, timeout.Token);
            }

            process.StandardInput.Close();
            await process.WaitForExitAsync(timeout.Token);
            var result = new ProcessResult(commandLine, process.ExitCode, await stdout, await stderr, stopwatch.Elapsed);
            return options.ThrowOnNonZeroExit ? result.EnsureSuccess() : result;
        }
        catch (OperationCanceledException) when (!process.HasExited)
        {
            KillTree(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new TimeoutException(string.Create(CultureInfo.InvariantCulture,
                $"Command did not finish within {options.Timeout.TotalSeconds:0.#} s and was killed: {commandLine}"));
        }
        catch (IOException) when (process.HasExited)
        {
            // The process exited without reading its standard input: report what it said instead.
            await process.WaitForExitAsync(CancellationToken.None);
            var result = new ProcessResult(commandLine, process.ExitCode, await stdout, await stderr, stopwatch.Elapsed);
            return options.ThrowOnNonZeroExit ? result.EnsureSuccess() : result;
        }
    }

    /// <summary>A command line in POSIX shell quoting, for messages and logs.</summary>
    public static string FormatCommandLine(string tool, IEnumerable<string> arguments)
    {
        var builder = new StringBuilder(Quote(tool));
        foreach (var argument in arguments)
        {
            builder.Append(' ').Append(Quote(argument));
        }

        return builder.ToString();
    }

    internal static ProcessStartInfo CreateStartInfo(string path, IEnumerable<string> arguments, string? workingDirectory, IReadOnlyDictionary<string, string?>? environment)
    {
        var startInfo = new ProcessStartInfo(path)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var argument in arguments)
        {
            startInfo.ArgumentList.Add(argument);
        }

        if (workingDirectory is not null)
        {
            startInfo.WorkingDirectory = workingDirectory;
        }

        // Stable, English tool messages whatever the developer's locale.
        startInfo.Environment["LC_ALL"] = "C.UTF-8";
        if (environment is not null)
        {
            foreach (var (name, value) in environment)
            {
                if (value is null)
                {
                    startInfo.Environment.Remove(name);
                }
                else
                {
                    startInfo.Environment[name] = value;
                }
            }
        }

        return startInfo;
    }

    internal static string Tail(string text, int maxLength = 4000)
    {
        var trimmed = text.TrimEnd();
        return trimmed.Length <= maxLength ? trimmed : "…" + trimmed[^maxLength..];
    }

    private static void KillTree(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already exited.
        }
    }

    private static string Quote(string value)
    {
        if (value.Length > 0 && value.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c, StringComparison.Ordinal)))
        {
            return value;
        }

        return "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }
}
