namespace Drydock.SiloHost.Cli;

/// <summary>Process exit codes of every <c>drydock</c> command (documented in the README).</summary>
public static class ExitCodes
{
    /// <summary>The command did what was asked.</summary>
    public const int Success = 0;

    /// <summary>The command failed; the message on standard error says what and where.</summary>
    public const int Failure = 1;

    /// <summary>The command line was invalid.</summary>
    public const int Usage = 2;

    /// <summary>The command was interrupted (Ctrl+C, SIGTERM).</summary>
    public const int Cancelled = 130;
}
