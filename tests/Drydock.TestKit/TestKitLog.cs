using Xunit;

namespace Drydock.TestKit;

/// <summary>Writes fixture diagnostics (command lines, service starts and stops) to the current test's output.</summary>
internal static class TestKitLog
{
    public static void Write(string message)
    {
        try
        {
            TestContext.Current.TestOutputHelper?.WriteLine("[testkit] " + message);
        }
        catch (InvalidOperationException)
        {
            // No test is running (collection fixture set-up/tear-down): nowhere to write.
        }
    }
}
