package calc;

/** The focal class of tests/test_execution.py's Java project. */
public class Calculator {
    public int add(int a, int b) {
        return a + b;
    }

    public boolean isPositive(int x) {
        return x > 0;
    }

    public int divide(int a, int b) {
        return a / b;
    }

    public boolean spin() {
        while (true) {
            Thread.onSpinWait();
        }
    }

    public void exit() {
        System.exit(3);
    }
}
